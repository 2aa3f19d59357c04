"""Where dropout's time goes under XLA on CPU: the random-number generator's lowering.

Times ``tf.nn.experimental.stateless_dropout`` (what ``keras.layers.Dropout``
calls, with ``rng_alg="auto_select"``) on a 128x256 activation, XLA-compiled
with each RNG algorithm and without XLA, and counts the HLO instructions each
lowers to. ``tfcustom.layers.dropout.Dropout`` uses Philox explicitly.

    python benchmarks/dropout_rng.py

Results depend on the machine and its load; they are measurements, not assertions.
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf


def main(calls=200):
    x = tf.ones((128, 256))
    seed = tf.constant([1, 2], tf.int64)  # an argument, so that XLA cannot fold the mask into a constant
    for alg in ("auto_select", "philox", "threefry"):
        for jit in (True, False):
            if alg == "threefry" and not jit:
                continue  # no TF kernel for ThreeFry outside XLA
            def dropout(x, s, alg=alg):
                return tf.nn.experimental.stateless_dropout(x, 0.2, seed=s, rng_alg=alg)

            f = tf.function(lambda x, s: dropout(x, s), jit_compile=jit)
            f(x, seed)
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                for _ in range(calls):
                    f(x, seed)
                best = min(best, (time.perf_counter() - start) / calls)
            hlo = len(f.experimental_get_compiler_ir(x, seed)(stage="hlo").splitlines()) if jit else None
            print(f"rng_alg={alg:12s} jit_compile={jit!s:5s} {best * 1e3:8.3f} ms per 128x256 mask"
                  + (f"   ({hlo} HLO lines)" if hlo else ""))


if __name__ == "__main__":
    main()
