"""tfpipeline: fine-tune BERT-family models with tf.data + Keras and serve them."""
from tfpipeline import _env  # noqa: F401  (must run before TensorFlow is imported)

__version__ = "0.1.0"
