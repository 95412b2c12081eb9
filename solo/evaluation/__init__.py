"""COCO-style evaluation (segm AP through pycocotools, bbox AP from the mask boxes)."""

from solo.evaluation.coco_eval import coco_metrics, evaluate, format_table, predictions_to_coco

__all__ = ["coco_metrics", "evaluate", "format_table", "predictions_to_coco"]
