"""The shop's URLs: the orders API, Django's admin (for logging in) and the sidepunch dashboard (staff only)."""
from django.contrib import admin
from django.urls import path

from orders import views
from sidepunch.contrib.django.dashboard import dashboard_path

urlpatterns = [
    path("orders/", views.create_order, name="create-order"),
    path("orders/<int:pk>/", views.show_order, name="show-order"),
    path("admin/", admin.site.urls),
    dashboard_path("sidepunch/"),
]
