"""The long-context generators as registered tasks (entry points in pyproject.toml), for `bench sweep`."""

from __future__ import annotations

from typing import Any, Callable

from bench.contracts import LMTask, Protocol


class GeneratedTask(LMTask):
    """A tasks.longctx generator; `generator` names it in tasks.longctx.TASKS."""

    generator = ""
    protocol = Protocol(metrics=(), normalizer="none", notes="scored by the sample's own rule")

    def samples(self, length_tokens: int, n: int, seed: int,
                count_tokens: Callable[[str], int] | None = None) -> list[Any]:
        from tasks.longctx import generate

        return generate(self.generator, n_tokens=length_tokens, seed=seed, n_samples=n,
                        tokenizer=count_tokens, **self.options)

    def score(self, sample: Any, prediction: str) -> float:
        return sample.score(prediction)


def _task(name: str, generator: str, description: str) -> type:
    return type(name.title().replace("-", ""), (GeneratedTask,),
                {"name": name, "generator": generator, "description": description, "__module__": __name__})


NiahSingle = _task("niah-single", "niah_single", "RULER needle in a haystack: one key, one value")
NiahMultiKey = _task("niah-multikey", "niah_multikey", "RULER needle in a haystack among distractor keys")
NiahMultiValue = _task("niah-multivalue", "niah_multivalue", "RULER needle in a haystack: all values of one key")
NiahMultiQuery = _task("niah-multiquery", "niah_multiquery", "RULER needle in a haystack: several keys asked")
VariableTracking = _task("variable-tracking", "vt", "RULER variable tracking: names bound through chains")
CommonWords = _task("common-words", "cwe", "RULER common-words extraction")
StoryRetrieval = _task("story-retrieval", "story_retrieval", "Story task: retrieve a fact from one chapter")
StoryMultiHop = _task("story-multihop", "story_multihop", "Story task: combine facts from two chapters")
StoryFiltering = _task("story-filtering", "story_filtering", "Story task: list chapters matching a condition")
