"""Which answer a retried approval goes on with (``mlops_airflow.approval.answer_to_resume``).

The end-to-end test (tests/e2e/test_monitoring_loop.py) drives the race that retries the task and
clears it on purpose; this one pins every case of the decision, including the one that race makes
only under heavy load: the attempt acted on the answer and was failed anyway.
"""

from __future__ import annotations

PROBE = r"""
import json
from mlops_airflow.approval import answer_to_resume

answered = {"response_received": True, "responded_at": "2026-12-07T20:14:05.037362Z",
            "chosen_options": ["Approve"], "params_input": {},
            "responded_by_user": {"id": "u1", "name": "ana"}}
acted = {"responded_at": "2026-12-07T20:14:05.037362+00:00", "try_number": 1}
older = {"responded_at": "2026-12-07T19:00:00+00:00", "try_number": 1}

def case(detail, acted_on, acted_try):
    answer = answer_to_resume(detail, acted_on, acted_try)
    return None if answer is None else [answer["chosen_options"],
                                        answer["responded_at"].isoformat(),
                                        answer["responded_by_user"]["name"]]

print(json.dumps({
    "no request on record": case(None, None, None),
    "not answered yet": case({"response_received": False, "responded_at": None}, None, None),
    "answered, no try acted on it": case(answered, None, None),
    "an older answer was acted on": case(answered, older, None),
    "acted on by a try that was failed": case(answered, acted, {"state": "failed"}),
    "acted on by a try left up for retry": case(answered, acted, {"state": "up_for_retry"}),
    "acted on by a try that succeeded (cleared)": case(answered, acted, {"state": "success"}),
    "acted on by a try whose state is unknown": case(answered, acted, {"state": "unknown"}),
}))
"""


def test_a_retry_goes_on_with_an_answer_unless_a_try_that_acted_on_it_succeeded(run_probe):
    reused = [["Approve"], "2026-12-07T20:14:05.037362+00:00", "ana"]
    assert run_probe(PROBE) == {
        "no request on record": None,
        "not answered yet": None,
        "answered, no try acted on it": reused,
        "an older answer was acted on": reused,
        # the resumed attempt reached execute_complete, then the scheduler failed it
        "acted on by a try that was failed": reused,
        "acted on by a try left up for retry": reused,
        # cleared on purpose after it acted: asked again, as Airflow does
        "acted on by a try that succeeded (cleared)": None,
        "acted on by a try whose state is unknown": None,
    }
