"""Reading the packing stage's output: memory-mapped Arrow rows grouped into micro-batches.

Only the small per-row columns (batch, seq_lens, n_targets) are read up front; the token columns
are read from the memory map when a micro-batch is loaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import torch

from longalign.errors import UserError
from longalign.formats import IGNORE, open_packed


@dataclass
class MicroBatch:
    """Where a micro-batch's rows live and what they hold (no tokens)."""

    index: int  # the stored batch index
    rows: list[tuple[int, int, int]] = field(default_factory=list)  # (file, record batch, row)
    seq_lens: list[list[int]] = field(default_factory=list)  # per row, its sample lengths
    n_targets: list[list[int]] = field(default_factory=list)  # per row, targets per sample

    @property
    def tokens(self) -> int:
        """Real (non-padding) tokens."""
        return sum(sum(r) for r in self.seq_lens)

    @property
    def width(self) -> int:
        """Padded row length."""
        return max((sum(r) for r in self.seq_lens), default=0)

    @property
    def num_sequences(self) -> int:
        """Samples with at least one target (LongAlign's M counts these)."""
        return sum(1 for r in self.n_targets for n in r if n > 0)

    @property
    def num_targets(self) -> int:
        return sum(sum(r) for r in self.n_targets)


@dataclass
class Batch:
    """Tensors of one micro-batch, right-padded to a common width."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    seq_lens: list[list[int]]


class PackedData:
    """A packing-stage output directory opened for training.

    ``document_masking=False`` (an ablation; ProLong's ``single_seq``) reads every row as one
    sequence: positions run on across samples and attention crosses them. In text rows
    (``meta["format"] == "text"``) the first token of every sample after the row's first is then
    a target as well, since nothing separates it from what precedes it; chat rows keep their
    labels (a chat's first token is a template token, never a target).
    """

    def __init__(self, directory: str | os.PathLike, *, document_masking: bool = True) -> None:
        self.document_masking = document_masking
        self.meta, shards = open_packed(directory)
        self.directory = Path(directory)
        self.strategy = self.meta["strategy"]
        self.pad_token_id = int(self.meta.get("pad_token_id") or 0)
        self.text = self.meta.get("format") == "text"
        self.paths = shards.paths
        self._readers: list[pa.ipc.RecordBatchFileReader] = shards.files
        self.batches: list[MicroBatch] = []
        self.samples_without_targets = 0
        self._index()
        if not self.batches:
            raise UserError(f"packed data {self.directory} holds no rows")

    def _index(self) -> None:
        by_index: dict[int, MicroBatch] = {}
        last = None
        for f, (path, reader) in enumerate(zip(self.paths, self._readers)):
            for b in range(reader.num_record_batches):
                rb = reader.get_batch(b)
                lengths = pc.list_value_length(rb.column("input_ids")).to_pylist()
                label_lengths = pc.list_value_length(rb.column("labels")).to_pylist()
                cols = {c: rb.column(c).to_pylist() for c in ("batch", "seq_lens", "n_targets")}
                for r in range(rb.num_rows):
                    where = f"{path.name} record batch {b} row {r}"
                    seq_lens, n_targets = cols["seq_lens"][r], cols["n_targets"][r]
                    if sum(seq_lens) != lengths[r] or label_lengths[r] != lengths[r]:
                        raise UserError(f"packed data {where}: seq_lens sum {sum(seq_lens)}, "
                                        f"{lengths[r]} input_ids, {label_lengths[r]} labels")
                    if len(n_targets) != len(seq_lens) or not seq_lens:
                        raise UserError(f"packed data {where}: {len(seq_lens)} seq_lens "
                                        f"but {len(n_targets)} n_targets")
                    index = int(cols["batch"][r])
                    if index != last and index in by_index:
                        raise UserError(f"packed data {where}: rows of batch {index} "
                                        "are not consecutive")
                    last = index
                    mb = by_index.setdefault(index, MicroBatch(index))
                    mb.rows.append((f, b, r))
                    if not self.document_masking:  # the whole row is one sequence
                        joined = len(seq_lens) - 1 if self.text else 0
                        seq_lens, n_targets = [sum(seq_lens)], [sum(n_targets) + joined]
                    mb.seq_lens.append(list(seq_lens))
                    mb.n_targets.append(list(n_targets))
                    self.samples_without_targets += sum(1 for n in n_targets if n == 0)
        self.batches = [by_index[k] for k in sorted(by_index)]

    @property
    def rows(self) -> int:
        return sum(len(mb.rows) for mb in self.batches)

    @property
    def samples(self) -> int:
        return sum(len(r) for mb in self.batches for r in mb.seq_lens)

    def load(self, mb: MicroBatch, vocab_size: int | None = None) -> Batch:
        """Read a micro-batch's tokens: right-padded ``input_ids`` (pad id), ``labels`` (-100)
        and ``position_ids`` restarting at 0 per sample (padding continues the last count)."""
        width = mb.width
        n = len(mb.rows)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, width), IGNORE, dtype=torch.long)
        position_ids = torch.empty((n, width), dtype=torch.long)
        for i, ((f, b, r), lens) in enumerate(zip(mb.rows, mb.seq_lens)):
            rb = self._readers[f].get_batch(b)
            ids = rb.column("input_ids")[r].values.to_numpy(zero_copy_only=False)
            lab = rb.column("labels")[r].values.to_numpy(zero_copy_only=False)
            length = len(ids)
            input_ids[i, :length] = torch.from_numpy(ids.astype("int64"))
            labels[i, :length] = torch.from_numpy(lab.astype("int64"))
            if not self.document_masking and self.text:
                starts = rb.column("seq_lens")[r].values.to_numpy(zero_copy_only=False)
                starts = torch.from_numpy(starts.cumsum()[:-1].astype("int64"))
                labels[i, starts] = input_ids[i, starts]
            position_ids[i] = _positions(lens, width)
        top = max(int(input_ids.max()), int(labels.max())) if width else 0
        if vocab_size is not None and top >= vocab_size:
            raise UserError(f"packed batch {mb.index} holds token id {top} >= "
                            f"the model's vocabulary size {vocab_size}: "
                            "packed with another tokenizer?")
        return Batch(input_ids, labels, position_ids, [list(r) for r in mb.seq_lens])


def _positions(seq_lens: list[int], width: int) -> torch.Tensor:
    parts = [torch.arange(n) for n in seq_lens]
    pad = width - sum(seq_lens)
    if pad:
        last = seq_lens[-1]
        parts.append(torch.arange(last, last + pad))
    return torch.cat(parts)
