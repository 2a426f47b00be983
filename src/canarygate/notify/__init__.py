"""Telling the outside world: webhooks on decisions and drift alerts (``webhooks``), and the
external gates a rollout waits on before it starts or promotes (``confirm``)."""

from canarygate.notify.confirm import Confirmations
from canarygate.notify.webhooks import Notifier

__all__ = ["Confirmations", "Notifier"]
