from miandan.api.routes import both_slashes

from . import api

urlpatterns = [
    *both_slashes("api/v1/reports/campaigns/<slug:slug>/budget", api.BudgetReportApi, name="report-budget"),
]
