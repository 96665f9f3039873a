from django.contrib.auth.models import AbstractUser, UserManager
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q

# Mainland China mobile numbers: 11 digits starting with 13-19.
PHONE_REGEX = r"^1[3-9]\d{9}$"
phone_validator = RegexValidator(PHONE_REGEX, "请输入正确的 11 位手机号码")


class User(AbstractUser):
    """App users log in by phone (username == phone); staff log in to admin by username."""

    phone = models.CharField(
        "手机号", max_length=11, unique=True, null=True, blank=True, validators=[phone_validator]
    )
    joined_app_version = models.CharField("注册时的 App 版本", max_length=32, blank=True, default="")

    objects = UserManager()

    class Meta:
        verbose_name = "用户"
        verbose_name_plural = "用户"
        constraints = [
            models.CheckConstraint(
                condition=Q(phone__isnull=True) | Q(phone__regex=PHONE_REGEX), name="user_phone_format"
            ),
        ]

    def __str__(self) -> str:
        return self.phone or self.username


class Device(models.Model):
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="devices", verbose_name="用户")
    device_id = models.CharField("设备号", max_length=128, db_index=True)
    app_version = models.CharField("App 版本", max_length=32, blank=True, default="")
    last_ip = models.GenericIPAddressField("最近 IP", null=True, blank=True)
    first_seen = models.DateTimeField("首次出现", auto_now_add=True)
    last_seen = models.DateTimeField("最近出现", auto_now=True)

    class Meta:
        verbose_name = "设备"
        verbose_name_plural = "设备"
        constraints = [models.UniqueConstraint(fields=["user", "device_id"], name="device_unique_per_user")]

    def __str__(self) -> str:
        return f"{self.device_id} ({self.user})"


class OtpCode(models.Model):
    """A one-time login code. Only its hash is stored."""

    phone = models.CharField("手机号", max_length=11, validators=[phone_validator], db_index=True)
    code_hash = models.CharField(max_length=128)
    created_at = models.DateTimeField("发送时间", auto_now_add=True)
    expires_at = models.DateTimeField("过期时间")
    attempts = models.PositiveSmallIntegerField("尝试次数", default=0)
    used_at = models.DateTimeField("使用时间", null=True, blank=True)
    request_ip = models.GenericIPAddressField("请求 IP", null=True, blank=True)

    class Meta:
        verbose_name = "验证码"
        verbose_name_plural = "验证码"
        indexes = [models.Index(fields=["phone", "-created_at"], name="otp_phone_recent")]
        constraints = [models.CheckConstraint(condition=Q(attempts__lte=100), name="otp_attempts_bounded")]

    def __str__(self) -> str:
        return f"{self.phone} @ {self.created_at:%Y-%m-%d %H:%M}"


class AuthToken(models.Model):
    """A revocable bearer token. The database keeps only the SHA-256 of the secret."""

    key_hash = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="auth_tokens", verbose_name="用户")
    device_id = models.CharField("设备号", max_length=128, blank=True, default="")
    created_at = models.DateTimeField("创建时间", auto_now_add=True)
    last_used_at = models.DateTimeField("最近使用", null=True, blank=True)
    revoked_at = models.DateTimeField("吊销时间", null=True, blank=True)

    class Meta:
        verbose_name = "登录令牌"
        verbose_name_plural = "登录令牌"

    def __str__(self) -> str:
        return f"token #{self.pk} of {self.user}"
