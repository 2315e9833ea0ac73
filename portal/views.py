from django.db import connection
from django.http import JsonResponse
from django.shortcuts import render

from compute.models import Flavor
from tenants.access import actor_for_request


def home(request):
    actor = actor_for_request(request)
    flavors = Flavor.objects.filter(active=True)
    return render(request, "portal/home.html", {"actor": actor, "flavors": flavors})


def healthz(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
