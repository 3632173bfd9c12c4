"""The admins' portal pages (teams, ownership, change control), under /manage/, namespace `manage`."""

from inventory import manage_views as inventory_pages
from migrations_app import manage_views as change_control_pages

app_name = "manage"

urlpatterns = [*inventory_pages.urlpatterns, *change_control_pages.urlpatterns()]
