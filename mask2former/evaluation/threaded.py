"""Evaluators whose per-image work runs on background threads, beside the model."""

from concurrent.futures import Future, ThreadPoolExecutor
from typing import List, Sequence

from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators

__all__ = ["ThreadedEvaluators"]


class ThreadedEvaluators(DatasetEvaluators):
    """
    :class:`DatasetEvaluators` whose ``process`` calls run on ``num_threads`` background
    threads, so that the evaluators' per-image encoding (RLE of instance masks, PNG of panoptic
    ids, reading and counting semantic labels) overlaps the model's next batch and each other.

    Each evaluator is served by one thread, which runs its calls in the order they came: every
    evaluator sees the same images in the same order as without threads, so the metrics are the
    same. At most ``max_pending`` batches are in flight (``process`` waits for the oldest beyond
    that), so that the outputs held stay bounded. :meth:`evaluate` and :meth:`reset` wait for
    the calls in flight; an exception raised by a call is raised again by the ``process``,
    ``evaluate`` or ``reset`` that waits for it.
    """

    def __init__(self, evaluators: Sequence[DatasetEvaluator], num_threads: int, max_pending: int = 2):
        if num_threads < 1:
            raise ValueError(f"ThreadedEvaluators: num_threads must be >= 1, got {num_threads}")
        super().__init__(list(evaluators))
        count = max(1, min(num_threads, len(self._evaluators)))
        self._executors = [ThreadPoolExecutor(1, thread_name_prefix="evaluator") for _ in range(count)]
        self._max_pending = max_pending
        self._batches: List[List[Future]] = []  # the calls of each batch in flight, oldest first

    def process(self, inputs, outputs) -> None:
        self._batches.append([
            self._executors[index % len(self._executors)].submit(evaluator.process, inputs, outputs)
            for index, evaluator in enumerate(self._evaluators)
        ])
        while len(self._batches) > self._max_pending:
            self._wait_oldest()

    def _wait_oldest(self) -> None:
        for call in self._batches.pop(0):
            call.result()

    def wait(self) -> None:
        """Returns once every ``process`` call made so far has run (raising its error, if any)."""
        while self._batches:
            self._wait_oldest()

    def reset(self) -> None:
        self.wait()
        super().reset()

    def evaluate(self):
        self.wait()
        return super().evaluate()

    def close(self) -> None:
        """Stops the threads (after the calls in flight)."""
        self.wait()
        for executor in self._executors:
            executor.shutdown()
