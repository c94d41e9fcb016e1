"""The client side: talk to brokers, ask many at once, pick the best offer and follow it."""

from execbroker.client.broker import (
    BrokerBadAnswer,
    BrokerClient,
    BrokerClientError,
    BrokerNoAnswer,
    BrokerUnreachable,
    WaitTimeout,
)
from execbroker.client.fanout import (
    BrokerAnswer,
    BrokerTarget,
    Candidate,
    Choice,
    Outcome,
    ask_all,
    choose,
    fan_out,
)
from execbroker.client.policy import POLICIES, Policy, get_policy, key_policy, register
from execbroker.client.results import (
    FINAL_PHASES,
    BrokerInfo,
    Connector,
    Logs,
    Message,
    Offer,
    OfferSet,
    Session,
)

__all__ = [
    "FINAL_PHASES",
    "POLICIES",
    "BrokerAnswer",
    "BrokerBadAnswer",
    "BrokerClient",
    "BrokerClientError",
    "BrokerInfo",
    "BrokerNoAnswer",
    "BrokerTarget",
    "BrokerUnreachable",
    "Candidate",
    "Choice",
    "Connector",
    "Logs",
    "Message",
    "Offer",
    "OfferSet",
    "Outcome",
    "Policy",
    "Session",
    "WaitTimeout",
    "ask_all",
    "choose",
    "fan_out",
    "get_policy",
    "key_policy",
    "register",
]
