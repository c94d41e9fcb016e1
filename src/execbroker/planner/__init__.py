"""Pure planning logic for the ExecutionBroker: can this demand run within the quota, and how.

No I/O, no database, no clock: callers pass ``now`` and the calendar of what is already held,
so every answer is deterministic and testable.
"""

from .calendar import Booking, Calendar
from .demand import Demand
from .offers import Offer, OfferRules, Plan, Pricing, check_accept, plan_offers
from .quota import Quota
from .resources import Range, Resources
from .units import Unit

__all__ = [
    "Booking",
    "Calendar",
    "Demand",
    "Offer",
    "OfferRules",
    "Plan",
    "Pricing",
    "Quota",
    "Range",
    "Resources",
    "Unit",
    "check_accept",
    "plan_offers",
]
