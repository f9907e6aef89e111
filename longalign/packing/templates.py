"""Chat templates by name: the tokenizer's own, LongAlign's Llama format, ChatML, or Jinja.

``llama2-inst`` is the format LongAlign trained Llama-2 with (THUDM/LongAlign, pre_tokenize.py):
one BOS, then every user/assistant pair as ``[INST]{user}[/INST]{assistant}``, pairs joined by
a blank line (``\\n\\n``), and one EOS after the last answer. LongAlign labels each answer and
the token right after it with EOS: for the last answer that is the EOS itself; for an earlier
one it is the first token of the ``\\n\\n`` that follows, whose *label* is EOS while its input
stays ``\\n\\n`` (so the model learns to stop after every answer, as it must at inference,
where the history is rebuilt without EOS). :func:`llama2_inst_parts` gives that layout;
:data:`LLAMA2_INST` is the same format as a Jinja template, which the trained model's tokenizer
carries for generation (the prompt ends with ``[/INST]``). A system message, which LongAlign's
code does not handle, goes into the first ``[INST]`` in Llama-2's ``<<SYS>>`` form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from longalign.errors import UserError

NAMES = ("tokenizer", "llama2-inst", "chatml")

LLAMA2_INST = (
    "{%- set ns = namespace(system='', turns=0) -%}"
    "{{- bos_token or '' -}}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'system' -%}"
    "{%- set ns.system = '<<SYS>>\\n' ~ m['content'] ~ '\\n<</SYS>>\\n\\n' -%}"
    "{%- elif m['role'] == 'user' -%}"
    "{%- if ns.turns > 0 -%}{{- '\\n\\n' -}}{%- endif -%}"
    "{{- '[INST]' ~ ns.system ~ m['content'] ~ '[/INST]' -}}"
    "{%- set ns.system = '' -%}{%- set ns.turns = ns.turns + 1 -%}"
    "{%- elif m['role'] == 'assistant' -%}"
    "{{- m['content'] -}}{%- if loop.last -%}{{- eos_token -}}{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

CHATML = (
    "{%- for m in messages -%}"
    "{{- '<|im_start|>' ~ m['role'] ~ '\\n' ~ m['content'] ~ '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def resolve_template(spec: str, tokenizer: Any) -> str:
    """The Jinja template that ``spec`` names: ``tokenizer`` (the tokenizer's own),
    ``llama2-inst``, ``chatml``, or ``spec`` itself when it is a Jinja template string."""
    if spec == "tokenizer":
        own = getattr(tokenizer, "chat_template", None)
        if not own or not isinstance(own, str):
            raise UserError("the model's tokenizer has no chat template: set "
                            "packing.chat_template (llama2-inst, chatml or a Jinja string)")
        return own
    if spec == "llama2-inst":
        if not getattr(tokenizer, "eos_token", None):
            raise UserError("chat_template llama2-inst needs a tokenizer with an EOS token")
        return LLAMA2_INST
    if spec == "chatml":
        for token in ("<|im_start|>", "<|im_end|>"):
            if token not in tokenizer.get_vocab():
                raise UserError(f"chat_template chatml needs the token {token} in the "
                                "tokenizer's vocabulary (use llama2-inst or a Jinja string)")
        return CHATML
    if "{{" in spec or "{%" in spec:
        return spec
    raise UserError(f"unknown chat_template {spec!r}: use {', '.join(NAMES)} or a Jinja string")


class ChatRenderer:
    """Renders conversations with one Jinja chat template exactly as transformers'
    ``apply_chat_template(..., tokenize=False)`` does, at about half its cost per call: the
    template is compiled once by transformers (its sandbox, filters and globals) and rendered
    with the same variables (the tokenizer's special tokens, ``add_generation_prompt``, no tools
    or documents), without the per-call conversion of the messages, which for the plain
    role/content dicts of string values that packing passes changes nothing. Packing renders
    every chat several times (each labelled turn's prefixes), so this is a measurable part of the
    stage (bench/scale_bench.py).

    Falls back to ``apply_chat_template`` itself when transformers' compiler cannot be reached
    or when a probe conversation renders differently by the two routes (a transformers release
    that passes the template something new)."""

    PROBE = [{"role": "user", "content": "probe"}, {"role": "assistant", "content": "answer"}]

    def __init__(self, tokenizer: Any, template: str) -> None:
        self._tokenizer, self.template = tokenizer, template
        self._compiled: Any = None
        try:
            from transformers.utils.chat_template_utils import (_compile_jinja_template,
                                                                _plain_template_data)

            self._compiled = _compile_jinja_template(template)
            self._variables = _plain_template_data(dict(tokenizer.special_tokens_map))
        except Exception:  # noqa: BLE001 (any failure here means: use transformers' own call)
            self._compiled = None
            return
        for generation in (False, True):
            if _outcome(self, generation) != _outcome(self._reference, generation):
                self._compiled = None
                return

    @property
    def compiled(self) -> bool:
        """Whether chats are rendered by the compiled template (else by apply_chat_template)."""
        return self._compiled is not None

    def _reference(self, chats: list[list[dict]], generation: bool) -> list[str]:
        return self._tokenizer.apply_chat_template(chats, tokenize=False,
                                                   add_generation_prompt=generation,
                                                   chat_template=self.template)

    def __call__(self, chats: list[list[dict]], generation: bool = False) -> list[str]:
        """The renderings of ``chats`` (each a list of role/content dicts of strings); raises
        what the template raises."""
        if self._compiled is None:
            return self._reference(chats, generation)
        return [self._compiled.render(messages=chat, tools=None, documents=None,
                                      add_generation_prompt=generation, **self._variables)
                for chat in chats]


def _outcome(render: Any, generation: bool) -> Any:
    """What ``render`` makes of the probe conversation: its text, or the type of what it raised."""
    try:
        return render([ChatRenderer.PROBE], generation)
    except Exception as exc:  # noqa: BLE001 (a template may refuse the probe; both routes must)
        return type(exc)


@dataclass
class Part:
    """A piece of a rendered chat: ``kind`` is ``prompt`` (no labels), ``answer`` (labelled) or
    ``eos`` (the final EOS, labelled); ``eos_label`` marks an answer after which the next token
    gets the label EOS (LongAlign's earlier turns)."""

    text: str
    kind: str
    eos_label: bool = False


def llama2_inst_parts(messages: list[dict], bos: str | None, eos: str) -> list[Part]:
    """LongAlign's Llama layout of a chat (module docstring). Raises ValueError unless the
    messages are an optional system message and then user/assistant in turn; a last user
    message without an answer is left out, as LongAlign does."""
    system = ""
    turns = list(messages)
    if turns and turns[0]["role"] == "system":
        system = f"<<SYS>>\n{turns[0]['content']}\n<</SYS>>\n\n"
        turns = turns[1:]
    if len(turns) % 2:
        turns = turns[:-1]
    roles = [m["role"] for m in turns]
    if not turns or roles != ["user", "assistant"] * (len(turns) // 2):
        raise ValueError("llama2-inst needs user and assistant messages in turn "
                         "(after an optional system message)")
    parts = [Part(bos or "", "prompt")]
    for k in range(0, len(turns), 2):
        last = k + 2 == len(turns)
        head = "\n\n" if k else ""
        parts.append(Part(f"{head}[INST]{system if k == 0 else ''}{turns[k]['content']}[/INST]",
                          "prompt"))
        parts.append(Part(turns[k + 1]["content"], "answer", eos_label=not last))
    parts.append(Part(eos, "eos"))
    return parts
