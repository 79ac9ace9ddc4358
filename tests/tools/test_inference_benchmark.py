"""benchmarks/inference.py: the instance boxes' share of inference time, against its 2 % budget."""
from benchmarks.inference import BOXES_BUDGET, boxes_budget_line, format_table


def _row(boxes_share):
    timed = {"backbone": 0.5, "pixel_decoder": 0.3, "transformer_decoder": 0.1,
             "postprocess": 0.1, "total": 1.0, "peak_memory_mb": 100.0}
    if boxes_share is not None:
        timed.update(boxes=boxes_share * timed["total"], boxes_share=boxes_share)
    return {"task": "panoptic", "backbone": "R50", "size": (512, 768), "batch": 1,
            "device_label": "cpu fp32", "this": timed}


def test_boxes_share_in_the_table_and_against_the_budget():
    assert BOXES_BUDGET == 0.02
    assert "| 10.4 (1.04 %) |" in format_table([_row(0.0104)], [])
    assert boxes_budget_line([_row(0.0104), _row(0.0)]) == (
        "instance boxes: at most 1.04 % of a batch's time, within the 2 % budget")
    assert "at most 2.50 %" in boxes_budget_line([_row(0.0104), _row(0.025)])
    assert "OVER the 2 % budget" in boxes_budget_line([_row(0.025)])
    assert boxes_budget_line([_row(None)]) == "instance boxes: not timed (no instance output)"
