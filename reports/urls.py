from django.urls import path

from . import api

urlpatterns = [
    path("api/v1/reports/campaigns/<slug:slug>/budget", api.BudgetReportApi.as_view(), name="report-budget"),
]
