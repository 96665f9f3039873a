from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from miandan.api.fields import StrictCharField, StrictRegexField
from miandan.api.guard import client_inet

from .models import PHONE_REGEX
from .services import auth_ip_check, login_with_otp, otp_request, token_revoke
from .sms import code_shown_to_client

phone_field = StrictRegexField(PHONE_REGEX, max_length=11, error_messages={"invalid": "请输入正确的 11 位手机号码"})


class UserOutput(serializers.Serializer):
    id = serializers.IntegerField()
    phone = serializers.CharField()
    joined_app_version = serializers.CharField()


class MeApi(APIView):
    """The caller's own profile: the cheapest authenticated call (token lookup + render)."""

    @extend_schema(responses=UserOutput, summary="The logged-in user")
    def get(self, request):
        return Response(user_output(request.user))


def user_output(user) -> dict:
    """UserOutput's representation, without building the serializer per request (its field copies were the
    larger part of this view, issue 14); tests/accounts hold the two equal."""
    phone, version = user.phone, user.joined_app_version
    return {"id": int(user.pk), "phone": None if phone is None else str(phone),
            "joined_app_version": None if version is None else str(version)}


class LogoutApi(APIView):
    """Revoke the bearer token this request was made with; other devices stay logged in."""

    @extend_schema(request=None, responses={204: None}, summary="Log out: revoke the current token")
    def post(self, request):
        token = getattr(request, "auth_token", None)
        if token is not None:
            token_revoke(token=token)
        return Response(status=status.HTTP_204_NO_CONTENT)


class OtpRequestApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    class InputSerializer(serializers.Serializer):
        phone = phone_field

    @extend_schema(
        request=InputSerializer,
        responses={202: OpenApiResponse(
            inline_serializer("OtpSent", {
                "detail": serializers.CharField(),
                "expires_in": serializers.IntegerField(help_text="seconds"),
                "debug_code": serializers.CharField(
                    required=False,
                    help_text="development only (DJANGO_DEBUG=1 with the console SMS backend): the code itself, so the "
                              "demo can be tried without reading the server log; never present otherwise"),
            }),
            description="验证码已发送",
        )},
        summary="Send a one-time login code",
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        auth_ip_check(action="otp", ip=client_inet(request))
        code = otp_request(phone=data.validated_data["phone"], ip=client_inet(request))
        body = {"detail": "验证码已发送", "expires_in": 300}
        if code_shown_to_client():
            body["debug_code"] = code
        return Response(body, status=status.HTTP_202_ACCEPTED)


class TokenCreateApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    class InputSerializer(serializers.Serializer):
        phone = phone_field
        code = StrictRegexField(r"^\d{6}$", error_messages={"invalid": "验证码是 6 位数字"})
        device_id = StrictCharField(min_length=1, max_length=128, required=False,
                                    help_text="the app's own device id; without it the server issues one")

    @extend_schema(
        request=InputSerializer,
        responses={200: inline_serializer("TokenOutput", {
            "token": serializers.CharField(), "user": UserOutput(),
            "device_id": serializers.CharField(help_text="the device the token is bound to (per-device caps count it)"),
        })},
        summary="Exchange a phone + one-time code for a bearer token",
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        auth_ip_check(action="token", ip=client_inet(request))
        token, user, device_id = login_with_otp(
            phone=data.validated_data["phone"], code=data.validated_data["code"],
            device_id=data.validated_data.get("device_id", ""), ip=client_inet(request), with_device=True,
        )
        return Response({"token": token, "user": UserOutput(user).data, "device_id": device_id})
