"""The vaekit formulas for JAX (:mod:`vaekit.interop.jax`) and Keras 3 (:mod:`vaekit.interop.keras`)."""
