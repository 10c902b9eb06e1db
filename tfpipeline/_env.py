"""Process-wide settings that must happen before TensorFlow is imported.

transformers' TF classes are ``tf_keras`` models; TensorFlow >= 2.16 would
otherwise hand out Keras 3 objects that fail inside ``compile``.
"""
import os

# Whether the user chose TensorFlow's C++ log level themselves (the CLI then shows its startup lines as they are).
USER_LOG_LEVEL = os.environ.get("TF_CPP_MIN_LOG_LEVEL")

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import warnings  # noqa: E402

warnings.filterwarnings("ignore", message="TensorFlow and JAX classes are deprecated")
