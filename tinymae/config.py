"""The settings every MAE here shares; mae_mlp.MLPConfig and mae_vit.ViTConfig add their own."""
from dataclasses import asdict, dataclass


@dataclass
class MAEConfig:
    img_size: int = 48  # square input images
    patch_size: int = 6  # 48 / 6 = 8 x 8 = 64 patches
    in_chans: int = 3
    mask_ratio: float = 0.75  # the paper's default: the encoder sees 16 of 64 patches
    norm_pix_loss: bool = False  # predict per-patch normalised pixels (the paper's Table 1d)
    loss_on: str = "masked"  # "masked": removed patches only (the paper); "all": every patch

    @property
    def num_patches(self):  # L
        return (self.img_size // self.patch_size) ** 2

    @property
    def patch_dim(self):  # p*p*3
        return self.patch_size ** 2 * self.in_chans

    @property
    def len_keep(self):  # K, as random_masking computes it
        return int(self.num_patches * (1 - self.mask_ratio))

    def to_dict(self):
        return asdict(self)

    def validate(self):
        """Raise ValueError, naming the setting, for settings no MAE here can be built with."""
        if self.loss_on not in ("masked", "all"):
            raise ValueError(f"loss_on must be 'masked' or 'all', got {self.loss_on!r}")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.len_keep < 1:
            raise ValueError(f"mask_ratio {self.mask_ratio} leaves no visible patch")
