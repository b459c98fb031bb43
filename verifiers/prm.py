"""A transformers process reward model of the Qwen2.5-Math-PRM / Math-Shepherd kind.

The steps are written one after another, each followed by a *step token* (Qwen2.5-
Math-PRM: ``"<extra_0>"``; Math-Shepherd: ``"ки"``), and the model is run once over
the whole text. The step scores are read at the step-token positions:

- ``head="token_classification"`` (Qwen2.5-Math-PRM, Zhang et al. 2025, "The Lessons
  of Developing Process Reward Models in Mathematical Reasoning"): the model outputs
  class logits per token (``[batch, seq, classes]``); the score is the softmax
  probability of ``positive_index`` at each step token.
- ``head="lm"`` (Math-Shepherd, Wang et al. 2024): a causal LM; the score is
  P(good) / (P(good) + P(bad)) of the ``good`` and ``bad`` tokens (``"+"`` / ``"-"``)
  in the next-token distribution at each step token.

The model runs in-process, off the event loop (``asyncio.to_thread``). It is not an
engine, so each call reserves one *call* on the run's meter (refused with
BudgetExhausted when none is left) and charges the tokens it read, kind ``"verify"``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from ttc.context import RunContext
from ttc.types import Prompt, Usage

from .process import Aggregate, ProcessVerifier

QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


class TransformersPRM(ProcessVerifier):
    """A PRM run with transformers. ``model`` is a folder/hub id (loaded with
    ``AutoModelForTokenClassification`` / ``AutoModel`` for ``token_classification``,
    ``AutoModelForCausalLM`` for ``lm``) or an already built model, with its
    ``tokenizer``."""

    name = "transformers_prm"

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        aggregate: Aggregate = "last",
        head: Literal["token_classification", "lm"] = "token_classification",
        step_token: str = "<extra_0>",
        positive_index: int = 1,
        good: str = "+",
        bad: str = "-",
        system: str | None = QWEN_SYSTEM,
        use_chat_template: bool = True,
        batch_size: int = 8,
        device: str = "cpu",
        trust_remote_code: bool = False,
    ):
        super().__init__(aggregate)
        if head not in ("token_classification", "lm"):
            raise ValueError(f"head: expected 'token_classification' or 'lm', got {head!r}")
        if isinstance(model, (str, Path)):
            import transformers

            tok_src = tokenizer if tokenizer is not None else str(model)
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(tok_src), trust_remote_code=trust_remote_code)
            if head == "lm":
                cls = transformers.AutoModelForCausalLM
            elif trust_remote_code:
                cls = transformers.AutoModel
            else:
                cls = transformers.AutoModelForTokenClassification
            model = cls.from_pretrained(str(model), trust_remote_code=trust_remote_code)
        if tokenizer is None:
            raise ValueError("tokenizer: required when model is an already built model")
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.head = head
        self.device = device
        self.positive_index = positive_index
        self.system = system
        self.use_chat_template = use_chat_template and getattr(tokenizer, "chat_template", None) is not None
        self.batch_size = batch_size
        self.step_token = step_token
        self.step_token_id = self._single_token(step_token, "step_token")
        if head == "lm":
            self.good_id = self._single_token(good, "good")
            self.bad_id = self._single_token(bad, "bad")
        self._lock = threading.Lock()

    def _single_token(self, s: str, field: str) -> int:
        ids = self.tokenizer.encode(s, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"{field}: {s!r} must be a single token of the tokenizer, it is {len(ids)}")
        return int(ids[0])

    def format(self, question: str, steps: Sequence[str]) -> str:
        """The text the PRM reads: each step followed by the step token."""
        body = "".join(s + self.step_token for s in steps)
        if self.use_chat_template:
            msgs = ([{"role": "system", "content": self.system}] if self.system else []) + [
                {"role": "user", "content": question}, {"role": "assistant", "content": body},
            ]
            return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
        return f"{question}\n{body}"

    def step_probabilities(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Per text, the score at each step token; and the number of tokens read."""
        import torch

        out: list[list[float]] = []
        n_tokens = 0
        with self._lock, torch.no_grad():
            for b in range(0, len(texts), self.batch_size):
                chunk = texts[b : b + self.batch_size]
                enc = [self.tokenizer.encode(t, add_special_tokens=False) for t in chunk]
                width = max(len(e) for e in enc)
                pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
                ids = torch.full((len(enc), width), pad, dtype=torch.long)
                mask = torch.zeros((len(enc), width), dtype=torch.long)
                for i, e in enumerate(enc):  # right padding: positions of real tokens unchanged
                    ids[i, : len(e)] = torch.tensor(e)
                    mask[i, : len(e)] = 1
                    n_tokens += len(e)
                res = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
                logits = res.logits if hasattr(res, "logits") else res[0]
                logits = logits.float()
                for i, e in enumerate(enc):
                    pos = [j for j, t in enumerate(e) if t == self.step_token_id]
                    if self.head == "lm":
                        pair = logits[i, pos][:, [self.good_id, self.bad_id]]
                        probs = torch.softmax(pair, dim=-1)[:, 0]
                    else:
                        probs = torch.softmax(logits[i, pos], dim=-1)[:, self.positive_index]
                    out.append([float(p) for p in probs])
        return out, n_tokens

    async def step_scores(
        self, ctx: RunContext, prompt: Prompt, batch: Sequence[Sequence[str]], separator: str
    ) -> list[list[float]]:
        if not batch:
            return []
        texts = [self.format(prompt.question, steps) for steps in batch]
        with ctx.meter.reserve(Usage(calls=1), "verify") as res:
            scores, n_tokens = await asyncio.to_thread(self.step_probabilities, texts)
            res.bill(Usage(prompt_tokens=n_tokens, calls=1))
        for steps, sc in zip(batch, scores):
            if len(sc) != len(steps):
                raise ValueError(
                    f"step_token: found {len(sc)} step tokens for {len(steps)} steps "
                    f"(a step contains {self.step_token!r}, or the text was truncated)"
                )
        return scores
