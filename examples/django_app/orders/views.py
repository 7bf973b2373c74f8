"""POST /orders/ creates an order and enqueues ProcessOrder when the transaction commits; GET shows it."""
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from sidepunch.contrib.django import on_commit

from .jobs import ProcessOrder
from .models import Order


@csrf_exempt  # an API for the example; a real form keeps Django's CSRF check
@require_POST
def create_order(request: HttpRequest) -> JsonResponse:
    item = request.POST.get("item", "")
    if not item:
        return JsonResponse({"error": "item is required"}, status=400)
    try:
        with transaction.atomic():
            order = Order.objects.create(item=item)
            jid = on_commit(ProcessOrder).perform_async(order.pk)  # pushed only once the row is committed
            if item == "out of stock":
                raise LookupError(item)  # rolls back: no order, and no job
    except LookupError:
        return JsonResponse({"error": "out of stock"}, status=409)
    return JsonResponse({"id": order.pk, "jid": jid}, status=201)


@require_GET
def show_order(request: HttpRequest, pk: int) -> JsonResponse:
    order = get_object_or_404(Order, pk=pk)
    return JsonResponse({"id": order.pk, "item": order.item, "status": order.status})
