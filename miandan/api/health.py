from django.http import JsonResponse


def healthz(request):
    """Liveness: answers while the process lives, touches nothing else."""
    return JsonResponse({"status": "ok"})
