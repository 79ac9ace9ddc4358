"""
Registers every built-in dataset of Mask2Former, under the names the reference configs use.

This is the one place where the built-in dataset families are registered. Importing it
registers them all under :func:`catalog.datasets_root` (``$DETECTRON2_DATASETS``, default
"datasets"); see datasets/README.md for the expected layout of each one. Loading is lazy: a
dataset that is not on disk only fails, with a FileNotFoundError naming what is missing, when
it is used.

Registered next to detectron2's own built-in datasets, which stay as detectron2 registers
them (the configs use its "coco_2017_train_panoptic", "ade20k_sem_seg_{train,val}", COCO
instance and Cityscapes names):

- coco_2017_{train,val}_panoptic_with_sem_seg, coco_2017_{train,test}_stuff_10k_sem_seg
- ade20k_full_sem_seg_{train,val}, ade20k_panoptic_{train,val}, ade20k_instance_{train,val}
- mapillary_vistas_sem_seg_{train,val}, mapillary_vistas_panoptic_{train,val}
- the synthetic dataset of mask2former.data.synthetic
"""
from mask2former.data.synthetic import register_all_synthetic

from .catalog import datasets_root
from .register_ade20k_full import register_all_ade20k_full
from .register_ade20k_instance import register_all_ade20k_instance
from .register_ade20k_panoptic import register_all_ade20k_panoptic
from .register_coco_panoptic_annos_semseg import register_all_coco_panoptic_annos_sem_seg
from .register_coco_stuff_10k import register_all_coco_stuff_10k
from .register_mapillary_vistas import register_all_mapillary_vistas
from .register_mapillary_vistas_panoptic import register_all_mapillary_vistas_panoptic

__all__ = ["register_all", "BUILTIN_DATASETS"]

# name -> evaluator_type, for every name registered by `register_all` (synthetic excluded)
BUILTIN_DATASETS = {
    "coco_2017_train_panoptic_with_sem_seg": "coco_panoptic_seg",
    "coco_2017_val_panoptic_with_sem_seg": "coco_panoptic_seg",
    "coco_2017_train_stuff_10k_sem_seg": "sem_seg",
    "coco_2017_test_stuff_10k_sem_seg": "sem_seg",
    "ade20k_full_sem_seg_train": "sem_seg",
    "ade20k_full_sem_seg_val": "sem_seg",
    "ade20k_panoptic_train": "ade20k_panoptic_seg",
    "ade20k_panoptic_val": "ade20k_panoptic_seg",
    "ade20k_instance_train": "coco",
    "ade20k_instance_val": "coco",
    "mapillary_vistas_sem_seg_train": "sem_seg",
    "mapillary_vistas_sem_seg_val": "sem_seg",
    "mapillary_vistas_panoptic_train": "mapillary_vistas_panoptic_seg",
    "mapillary_vistas_panoptic_val": "mapillary_vistas_panoptic_seg",
}


def register_all(root: str) -> None:
    """
    Register all built-in datasets under ``root`` (idempotent for the same root).

    Args:
        root: the folder that holds the datasets, laid out as datasets/README.md describes.
    """
    register_all_coco_panoptic_annos_sem_seg(root)
    register_all_coco_stuff_10k(root)
    register_all_ade20k_full(root)
    register_all_ade20k_panoptic(root)
    register_all_ade20k_instance(root)
    register_all_mapillary_vistas(root)
    register_all_mapillary_vistas_panoptic(root)
    # The synthetic datasets keep their first root: calling register_all again with another
    # root raises there (the real datasets above are re-pointed instead).
    register_all_synthetic(root)


_root = datasets_root()
register_all(_root)
