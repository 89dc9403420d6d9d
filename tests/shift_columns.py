"""The shift columns of simulated stacks and registration tables, as (n, 2) arrays."""
import numpy as np


def true_shifts(stack):
    """The simulated dithers ``(dx, dy)`` of an `astrosr.simulate.ObservedStack`."""
    return np.column_stack([stack.shifts["dx"].value, stack.shifts["dy"].value])


def estimated(table):
    """``(dx, dy)`` of a registration table."""
    return np.column_stack([table["dx"].value, table["dy"].value])


def errors(table):
    """``(dx_err, dy_err)`` of a registration table."""
    return np.column_stack([table["dx_err"].value, table["dy_err"].value])
