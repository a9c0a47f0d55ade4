"""Data: image decoding (``imageio``), labelled datasets (``dataset``), duplicate groups (``dedup``), the group split
(``split``), training tensors and packs (``pack``) and the batched MRI augmentation with the one normalisation
(``augment``)."""
