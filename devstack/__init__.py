"""The development stack on loopback (devstack/stack.py); not part of the product."""
