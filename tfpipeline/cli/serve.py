"""``tfpipeline serve``: run ``serving.server.ModelServer`` until Ctrl-C or SIGTERM.

TensorFlow's thread pools are sized first: TF refuses new sizes once it has run an op.
The batching parameters file is read before that, so a bad file fails before any model loads.
"""
from __future__ import annotations

import logging
import signal

from serving.batching import BatchingParameters, load_batching_parameters
from serving.runner import Limits
from serving.server import ModelServer
from tfpipeline.config import ServeConfig

from tfpipeline.training.strategy import set_tf_threads


def _interrupt(signum, frame):  # docker stop / kubectl delete send SIGTERM: shut down like Ctrl-C
    raise KeyboardInterrupt


def run(config: ServeConfig, args) -> int:
    logging.basicConfig(level=logging.INFO, format="[serving] %(message)s")
    batching = None
    if config.enable_batching:
        batching = (load_batching_parameters(config.batching_parameters_file) if config.batching_parameters_file
                    else BatchingParameters())
    threads = set_tf_threads(config.intra_op_threads, config.inter_op_threads)
    server = ModelServer(config.model_base, host=config.host,
                         grpc_port=None if config.grpc_port < 0 else config.grpc_port,
                         rest_port=None if config.rest_port < 0 else config.rest_port,
                         limits=Limits(config.max_batch_size, config.max_text_bytes, config.max_image_bytes),
                         poll_seconds=config.poll_seconds, keep_versions=config.keep_versions, batching=batching,
                         prefer_tflite_model=config.prefer_tflite_model,
                         tflite_interpreters=config.tflite_interpreters)
    signal.signal(signal.SIGTERM, _interrupt)
    server.start()
    print(f"[tfpipeline] TF threads: intra-op {threads[0] or 'default'}, inter-op {threads[1] or 'default'}")
    if batching is not None:
        print(f"[tfpipeline] batching: {batching.describe()}")
    print(f"[tfpipeline] serving {config.model_base}: gRPC {server.grpc_target or 'off'}, "
          f"REST {server.rest_url or 'off'} (Ctrl-C stops)", flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0
