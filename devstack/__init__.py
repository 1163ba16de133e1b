"""The development stack on loopback (devstack/control.py); not part of the product."""
