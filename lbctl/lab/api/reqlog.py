"""The request log moved to lbctl.lab.reqlog (the fault proxy writes it too); this name stays
for the embedded server's own tests until that server is deleted."""

from lbctl.lab.reqlog import RequestLog, RequestRecord, kube_verb

__all__ = ["RequestLog", "RequestRecord", "kube_verb"]
