"""augpro-jax: knowledge distillation with augmentation (AugPro) for GLUE-style text classifiers."""

__version__ = "0.1.0"
