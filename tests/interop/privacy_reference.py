"""Opacus's RDP accountant as the reference for `dstrain privacy` (tests/interop/test_privacy_interop.sh).

usage: privacy_reference.py epsilon Q SIGMA STEPS DELTA   -> "epsilon order"
       privacy_reference.py sigma Q TARGET_EPS STEPS DELTA -> "noise_multiplier"
"""
import sys

from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier


def main() -> None:
    what, q, value, steps, delta = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    if what == "epsilon":
        accountant = RDPAccountant()
        accountant.history = [(value, q, steps)]
        epsilon, order = accountant.get_privacy_spent(delta=delta)
        print(f"{epsilon!r} {float(order)!r}")
    else:
        sigma = get_noise_multiplier(target_epsilon=value, target_delta=delta, sample_rate=q,
                                     steps=steps, accountant="rdp", epsilon_tolerance=0.01)
        print(f"{sigma!r}")


if __name__ == "__main__":
    main()
