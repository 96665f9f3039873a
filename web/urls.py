from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="web-home"),
    path("c/<slug:slug>/", views.campaign_page, name="web-campaign"),
]
