"""Cheap requests before expensive ones, expensive ones never starved (inference_code/scheduling.py, cost.py)."""

from __future__ import annotations

import asyncio
import io
import json
import time

import numpy as np
import pytest
from PIL import Image

from inference_code.cost import CostModel
from inference_code.preprocess import SCANS_INFO
from inference_code.scheduling import WorkerSlots, request_priority
from tests.inference_code.conftest import running_server
from tests.inference_code.test_server import _post_in_thread, assert_good_request_answered_promptly


def _grants(slots: WorkerSlots, priorities: list[float], cancel: set[int] = frozenset()) -> list[int]:
    """Queue one waiter per priority behind a held worker, release one at a time: the order served."""

    async def scenario():
        served: list[int] = []
        await slots.acquire(0.0)  # held
        waiters = {}
        for index, priority in enumerate(priorities):
            waiters[index] = asyncio.ensure_future(slots.acquire(priority))
            await asyncio.sleep(0)
        for index in cancel:
            waiters[index].cancel()
        await asyncio.sleep(0)
        for _ in range(len(priorities) - len(cancel)):
            slots.release()  # the holder, then each one served in turn
            await asyncio.sleep(0.01)
            done = [i for i, w in waiters.items() if i not in served and i not in cancel and w.done()]
            assert len(done) == 1
            served.append(done[0])
        slots.release()
        assert slots.free == slots.slots
        return served

    return asyncio.run(scenario())


def test_waiters_are_served_lowest_priority_first_ties_in_arrival_order():
    assert _grants(WorkerSlots(1), [5.0, 1.0, 3.0, 1.0]) == [1, 3, 2, 0]


def test_a_cancelled_waiter_is_skipped_and_no_worker_is_lost():
    assert _grants(WorkerSlots(1), [1.0, 2.0, 3.0], cancel={0}) == [1, 2]


def test_free_workers_are_taken_at_once():
    async def scenario():
        slots = WorkerSlots(2)
        await asyncio.wait_for(slots.acquire(9.0), 1)
        await asyncio.wait_for(slots.acquire(1.0), 1)
        assert slots.free == 0
        blocked = asyncio.ensure_future(slots.acquire(0.0))
        await asyncio.sleep(0.01)
        assert not blocked.done()
        slots.release()
        await asyncio.wait_for(blocked, 1)

    asyncio.run(scenario())


def test_an_expensive_request_is_delayed_not_starved():
    # arrived at 0 costing 1 s: cheap requests arriving up to 8 s later go first, later ones do not
    expensive = request_priority(0.0, 1.0, 8.0, 25.0)
    assert request_priority(7.9, 0.01, 8.0, 25.0) < expensive < request_priority(8.1, 0.0, 8.0, 25.0)
    # costing 7 s (two 40 Mpx progressive JPEGs): passed over for 25 s at most, inside a 50 s deadline
    assert request_priority(0.0, 7.0, 8.0, 25.0) == 25.0


def _jpeg(width: int, height: int, progressive: bool) -> Image.Image:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(buffer, "JPEG", progressive=progressive)
    image = Image.open(io.BytesIO(buffer.getvalue()))
    image.info[SCANS_INFO] = 10 if progressive else 1
    return image


def test_cost_grows_with_items_characters_pixels_and_scans():
    costs = CostModel(text_item_s=0.02, image_item_s=0.03)
    assert costs.texts(["a dog"] * 32) > 10 * costs.texts(["a dog"])
    assert costs.texts(["x" * 10_000]) > 1.5 * costs.texts(["a dog"])
    small, large = _jpeg(64, 64, False), _jpeg(2000, 2000, False)
    assert costs.images([large]) > 2 * costs.images([small])
    assert costs.images([_jpeg(2000, 2000, True)]) > 1.5 * costs.images([large])


def test_the_server_computes_a_cheap_request_before_an_expensive_one_that_arrived_first(gated, tiny_reference):
    with running_server(gated, workers=1) as (base, app):
        results: list = []
        holder = _post_in_thread(base, {"text": "holds the worker"}, results)
        assert gated.started.wait(10)
        expensive = _post_in_thread(base, {"texts": ["x" * 1000] * 32}, results)
        deadline = time.monotonic() + 10
        while app.state.admission().workers.waiting < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        cheap = _post_in_thread(base, {"text": "a dog"}, results)
        while app.state.admission().workers.waiting < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        gated.release()
        for thread in (holder, expensive, cheap):
            thread.join(30)
        assert [r[0] for r in results].count(200) == 3
        assert [request.items[:1] for request in gated.computed] == [("holds the worker",), ("a dog",), ("x" * 1000,)]
        assert_good_request_answered_promptly(base, tiny_reference)


@pytest.mark.parametrize("workers", [1, 2])
def test_requests_computed_at_once_give_the_same_embeddings(tiny_service, workers):
    from tests.inference_code.test_server import invoke

    with running_server(tiny_service, workers=workers) as (base, _app):
        results: list = []
        threads = [_post_in_thread(base, {"texts": [f"dog {i}", "a cat"]}, results) for i in range(6)]
        for thread in threads:
            thread.join(30)
        status, _, body = invoke(base, {"texts": ["dog 0", "a cat"]})
    assert status == 200 and sorted(r[0] for r in results) == [200] * 6
    cats = {json.dumps(json.loads(r[2])[1]) for r in results}
    assert cats == {json.dumps(json.loads(body)[1])}  # the same item, the same vector, whoever computed it
