"""The portal's URLs plus the bench-only baseline for scenario 3 (decision → callback).

`/bench-baseline/<id>/decide/` answers the same POST as the product's decide view, but calls
SendTaskSuccess inline, in the web request, with no outbox, broker or worker in between. It
exists only in the bench's web process (DJANGO_SETTINGS_MODULE=bench.settings): it is the floor
that the product's asynchronous path is compared with, not a feature.
"""

from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpResponse, HttpResponseRedirect
from django.urls import path
from django.utils import timezone
from django.views.decorators.http import require_POST

from approvals import permissions, tokens
from approvals.integrations import aws as gateway
from approvals.models import ApprovalRequest, RequestStatus
from portal.urls import urlpatterns as portal_urlpatterns


@login_required
@require_POST
def inline_decide(request, public_id):
    """Approve and call SendTaskSuccess before answering: the simplest design there is."""
    with transaction.atomic():
        approval = ApprovalRequest.objects.select_for_update().filter(public_id=public_id).first()
        if approval is None:
            return HttpResponse("not found", status=404)
        if permissions.decision_refusal(request.user, approval) is not None:
            return HttpResponse("refused", status=403)
        now = timezone.now()
        gateway.send_task_success(
            task_token=tokens.decrypt_token(approval.token_ciphertext),
            output={
                "approved": True,
                "requestId": str(approval.public_id),
                "decision": "approved",
                "decidedBy": {"email": request.user.email, "sub": request.user.oidc_sub},
                "decidedAt": now.isoformat(),
                "comment": request.POST.get("comment", ""),
            },
        )
        approval.status = RequestStatus.APPROVED
        approval.decided_by = request.user
        approval.decided_at = now
        approval.save(update_fields=["status", "decided_by", "decided_at", "updated_at"])
    return HttpResponseRedirect(f"/requests/{public_id}/result/")


urlpatterns = [
    path("bench-baseline/<uuid:public_id>/decide/", inline_decide),
    *portal_urlpatterns,
]
