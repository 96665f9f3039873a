from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "用户与登录"

    def ready(self):
        from . import checks  # noqa: F401  (registers the deploy checks)
