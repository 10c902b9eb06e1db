"""Pretrained checkpoints and Keras task models."""
