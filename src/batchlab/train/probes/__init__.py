"""Probes at fixed parameters: gradients and Hessian-vector products per backend, and the curvature estimators
built on them."""
