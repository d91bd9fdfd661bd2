"""Lens distortion (OpenCV's models), inverted exactly where rays are built.

Why invert per pixel instead of resampling images: resampling blurs every photo once more and
loses the border; instead each pixel keeps its colour and gets the ray that really produced it.
A pixel's *distorted* normalised coordinate (OpenCV axes: x right, y down, z forward)

    x_d = (u + 0.5 - cx) / fx,    y_d = (v + 0.5 - cy) / fy

is mapped back to the direction whose projection, distorted by the lens, lands there:

- ``OPENCV`` (perspective; nerfstudio, instant-ngp, COLMAP's OPENCV): for the undistorted
  ``(x, y) = (X/Z, Y/Z)``, ``r^2 = x^2 + y^2``, ``g = 1 + k1 r^2 + k2 r^4 + k3 r^6``::

      x_d = x g + 2 p1 x y + p2 (r^2 + 2 x^2),   y_d = y g + p1 (r^2 + 2 y^2) + 2 p2 x y

  inverted by 2-D Newton iterations from ``(x_d, y_d)`` (closed-form Jacobian, float64).
- ``OPENCV_FISHEYE`` (equidistant + polynomial): ``theta`` = angle to the optical axis,
  ``theta_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8)`` = ``|(x_d, y_d)|``;
  inverted by 1-D Newton on ``theta``, and the direction is built from ``sin``/``cos theta`` so
  fields of view near (or past) 180 degrees stay finite.

Iterations stop at a residual below 1e-12 (normalised units: about 1e-9 px for fx ~ 1000), i.e.
the inversion is exact to float64 round-off. A lens whose distortion folds over inside the image
(the radial map stops increasing) has no unique inverse: :func:`check_invertible` says so before
any ray is made.
"""

from dataclasses import dataclass

import numpy as np

MODELS = ("OPENCV", "OPENCV_FISHEYE")
TOLERANCE = 1e-12
"""Newton stops when every residual (normalised image units) is below this."""
MAX_ITERATIONS = 50


@dataclass(frozen=True)
class Distortion:
    """Coefficients of one of OpenCV's lens models (zeros: no distortion)."""

    model: str = "OPENCV"
    """``OPENCV`` (k1 k2 k3 radial, p1 p2 tangential) or ``OPENCV_FISHEYE`` (k1..k4)."""
    k1: float = 0.0
    k2: float = 0.0
    k3: float = 0.0
    k4: float = 0.0
    """Fisheye only (OpenCV's perspective k4 is a rational term we do not support)."""
    p1: float = 0.0
    p2: float = 0.0

    def describe(self) -> str:
        """``OPENCV k1=0.05 k2=-0.08 ...`` (non-zero coefficients only), for error messages."""
        names = ("k1", "k2", "k3", "k4", "p1", "p2")
        values = " ".join(f"{n}={getattr(self, n):g}" for n in names if getattr(self, n))
        return f"{self.model} {values}".strip()


def distort(lens: Distortion, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Perspective model: undistorted ``(x, y) = (X/Z, Y/Z)`` (any shape) -> distorted."""
    r2 = x * x + y * y
    radial = 1.0 + r2 * (lens.k1 + r2 * (lens.k2 + r2 * lens.k3))
    x_d = x * radial + 2.0 * lens.p1 * x * y + lens.p2 * (r2 + 2.0 * x * x)
    y_d = y * radial + lens.p1 * (r2 + 2.0 * y * y) + 2.0 * lens.p2 * x * y
    return x_d, y_d


def fisheye_theta_d(lens: Distortion, theta: np.ndarray) -> np.ndarray:
    """Fisheye model: angle to the axis -> distorted radius ``theta_d``."""
    t2 = theta * theta
    return theta * (1.0 + t2 * (lens.k1 + t2 * (lens.k2 + t2 * (lens.k3 + t2 * lens.k4))))


def undistort_perspective(
    lens: Distortion, x_d: np.ndarray, y_d: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Newton inversion of :func:`distort`: ``(x, y, residual)`` for distorted ``(x_d, y_d)``."""
    k1, k2, k3, p1, p2 = lens.k1, lens.k2, lens.k3, lens.p1, lens.p2
    x, y = x_d.copy(), y_d.copy()
    for _ in range(MAX_ITERATIONS):
        fx, fy = distort(lens, x, y)
        fx, fy = fx - x_d, fy - y_d
        if max(np.abs(fx).max(initial=0.0), np.abs(fy).max(initial=0.0)) < TOLERANCE:
            break
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        slope = 2.0 * (k1 + r2 * (2.0 * k2 + 3.0 * r2 * k3))  # d radial / d(r^2), times 2
        dxx = radial + slope * x * x + 2.0 * p1 * y + 6.0 * p2 * x
        dxy = slope * x * y + 2.0 * p1 * x + 2.0 * p2 * y
        dyy = radial + slope * y * y + 6.0 * p1 * y + 2.0 * p2 * x
        det = dxx * dyy - dxy * dxy  # the Jacobian is symmetric (dyx == dxy)
        det = np.where(np.abs(det) < 1e-300, 1e-300, det)
        x = x - (dyy * fx - dxy * fy) / det
        y = y - (dxx * fy - dxy * fx) / det
    fx, fy = distort(lens, x, y)
    return x, y, np.maximum(np.abs(fx - x_d), np.abs(fy - y_d))


def undistort_fisheye(lens: Distortion, theta_d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Newton inversion of :func:`fisheye_theta_d`: ``(theta, residual)``."""
    theta = theta_d.copy()
    for _ in range(MAX_ITERATIONS):
        error = fisheye_theta_d(lens, theta) - theta_d
        if np.abs(error).max(initial=0.0) < TOLERANCE:
            break
        t2 = theta * theta
        slope = 1.0 + t2 * (
            3 * lens.k1 + t2 * (5 * lens.k2 + t2 * (7 * lens.k3 + 9 * t2 * lens.k4))
        )
        theta = theta - error / np.where(np.abs(slope) < 1e-300, 1e-300, slope)
    return theta, np.abs(fisheye_theta_d(lens, theta) - theta_d)


def undistorted_directions(
    lens: Distortion, x_d: np.ndarray, y_d: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distorted normalised coordinates (any shape) -> unit directions (..., 3) in OpenCV camera
    axes (x right, y down, z forward), and the inversion's residual (...)."""
    if lens.model == "OPENCV_FISHEYE":
        radius = np.sqrt(x_d * x_d + y_d * y_d)
        theta, residual = undistort_fisheye(lens, radius)
        safe = np.where(radius > 0, radius, 1.0)
        sine = np.where(radius > 0, np.sin(theta) / safe, 1.0)
        directions = np.stack([x_d * sine, y_d * sine, np.cos(theta)], axis=-1)
        return directions, residual
    x, y, residual = undistort_perspective(lens, x_d, y_d)
    directions = np.stack([x, y, np.ones_like(x)], axis=-1)
    return directions / np.linalg.norm(directions, axis=-1, keepdims=True), residual


def check_invertible(
    lens: Distortion, fx: float, fy: float, cx: float, cy: float, width: int, height: int
) -> str | None:
    """Why ``lens`` has no unique inverse over the image (its border pixels), or None.

    The distorted radius must grow with the true radius (or angle) from the centre out to the
    farthest border pixel, and every border pixel must invert to the tolerance.
    """
    u = np.concatenate(
        [np.arange(width), np.arange(width), np.zeros(height), np.full(height, width - 1)]
    )
    v = np.concatenate(
        [np.zeros(width), np.full(width, height - 1), np.arange(height), np.arange(height)]
    )
    x_d, y_d = (u + 0.5 - cx) / fx, (v + 0.5 - cy) / fy
    directions, residual = undistorted_directions(lens, x_d, y_d)
    if not np.isfinite(directions).all() or residual.max() > 1e-9:
        return "the border pixels do not invert (Newton iterations do not converge)"
    angle = np.arccos(np.clip(directions[:, 2], -1.0, 1.0))  # angle to the optical axis
    limit = float(angle.max())
    if lens.model == "OPENCV_FISHEYE":
        grid = np.linspace(0.0, limit, 1024)
        mapped = fisheye_theta_d(lens, grid)
    else:
        if limit >= np.pi / 2 - 1e-6:
            return "the image reaches 90 degrees off axis, beyond a perspective lens"
        grid = np.linspace(0.0, np.tan(limit), 1024)
        mapped, _ = distort(Distortion(k1=lens.k1, k2=lens.k2, k3=lens.k3), grid, 0.0 * grid)
    if (np.diff(mapped) <= 0).any():
        return (
            "the distorted radius stops increasing inside the image (the lens folds over), "
            "so pixels have no unique ray"
        )
    return None
