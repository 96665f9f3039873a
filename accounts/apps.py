from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "用户与登录"

    def ready(self):
        from django.db.models.signals import post_delete, post_save, pre_delete

        from . import checks  # noqa: F401  (registers the deploy checks)
        from .models import AuthToken, User
        from .services import user_tokens_forget

        def forget(sender, instance, created=False, **kwargs):
            # Any saved change to a user (is_active, is_staff, is_superuser, ...) drops the cached token copies;
            # bulk .update() calls in the code only touch last_login and joined_app_version.
            if not created:
                user_tokens_forget(user_id=instance.pk)

        def token_deleted(sender, instance, **kwargs):
            from .auth import token_cache_forget

            token_cache_forget([instance.key_hash])

        # weak=False: the receivers are local functions.
        post_save.connect(forget, sender=User, dispatch_uid="accounts.token_cache.user_saved", weak=False)
        post_delete.connect(token_deleted, sender=AuthToken, dispatch_uid="accounts.token_cache.token_deleted",
                            weak=False)
        pre_delete.connect(forget, sender=User, dispatch_uid="accounts.token_cache.user_deleted", weak=False)

        from miandan.api.guard import register_prefetch

        from .auth import token_prefetch

        register_prefetch(token_prefetch)  # the token copy rides in the guard's rate-limit round trip

        from axes.signals import user_locked_out

        from .backends import log_lockout

        user_locked_out.connect(log_lockout, dispatch_uid="accounts.admin_lockout_log")
