"""The assign journal lives in the state store: ``provision.state.assign``. These names
stay here for the assign code that imports them."""

from ..state.assign import STATUSES, AssignJournal, Run, Step

__all__ = ["STATUSES", "AssignJournal", "Run", "Step"]
