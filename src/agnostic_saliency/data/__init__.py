"""Data sources: the Fashion-MNIST IDX reader and folders of unlabeled images."""

from .fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from .images import load_image_folder

__all__ = ["FASHION_MNIST_CLASSES", "load_fashion_mnist", "load_image_folder"]
