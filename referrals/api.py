"""Referral endpoints of api.md: my invite (code, link, QR, 口令), accept an invite, my invitees."""


from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from campaign.gate import campaign_require_visible
from campaign.selectors import campaign_get_cached
from miandan.api.guard import client_inet
from miandan.api.idempotency import idempotent
from miandan.api.pagination import Pagination, paginated

from . import sharing
from .codes import MAX_INPUT
from .models import Referral
from .selectors import mask_phone, referral_list_for_inviter
from .services import invite_code_get_or_create, referral_accept

UNDER_REVIEW_DETAIL = "邀请已提交，正在审核中，审核通过后发放免单卡"

ERRORS = {
    400: OpenApiResponse(description="invalid：请求体缺少 code 或格式错误"),
    404: OpenApiResponse(description="not_found（活动不存在）或 invalid_code（邀请码无效、格式错误、为空或属于其他活动）"),
    409: OpenApiResponse(description="campaign_not_live / self_referral / referral_cycle / already_referred"),
    503: OpenApiResponse(description="paused：邀请功能被运营暂停"),
}


def _campaign(slug: str):
    return campaign_require_visible(campaign_get_cached(slug=slug))


class InviteApi(APIView):
    class OutputSerializer(serializers.Serializer):
        code = serializers.CharField()
        url = serializers.URLField(help_text="落地页绝对地址")
        share_text = serializers.CharField(help_text="口令：不含链接，复制到任何地方都能用")
        qr_png_url = serializers.URLField()
        qr_svg_url = serializers.URLField()

    @extend_schema(
        responses={
            200: OutputSerializer,
            404: OpenApiResponse(description="not_found：活动不存在"),
            409: OpenApiResponse(description="campaign_not_live"),
            503: ERRORS[503],
        },
        summary="The caller's invite code for a campaign (created on first call) with link, QR codes and share text",
    )
    def get(self, request, slug: str):
        campaign = _campaign(slug)
        invite = invite_code_get_or_create(user=request.user, campaign=campaign)
        data = {
            "code": invite.code,
            "url": sharing.invite_url(invite.code, request),
            "share_text": sharing.share_text(campaign=campaign, code=invite.code),
            "qr_png_url": sharing.qr_url(invite.code, "png", request),
            "qr_svg_url": sharing.qr_url(invite.code, "svg", request),
        }
        return Response(self.OutputSerializer(data).data)


class RewardOutput(serializers.Serializer):
    outcome = serializers.ChoiceField(choices=Referral.Outcome.choices)
    outcome_display = serializers.CharField()
    voucher_code = serializers.CharField(allow_null=True)


def _reward(referral: Referral, side: str, *, show_code: bool) -> dict:
    voucher = getattr(referral, f"{side}_voucher") if show_code else None
    return {
        "outcome": getattr(referral, f"{side}_outcome"),
        "outcome_display": getattr(referral, f"get_{side}_outcome_display")(),
        "voucher_code": voucher.code if voucher is not None else None,
    }


def _accept_detail(referral: Referral) -> str:
    issued = Referral.Outcome.ISSUED
    mine, theirs = referral.invitee_outcome, referral.inviter_outcome
    if mine == issued and theirs == issued:
        return "邀请成功！你和好友各得一张免单卡"
    if mine == issued:
        return f"邀请成功！你获得一张免单卡（好友未获得：{referral.get_inviter_outcome_display()}）"
    return f"邀请已接受，但你未获得免单卡：{referral.get_invitee_outcome_display()}"


class ReferralsApi(APIView):
    """GET: the caller's invitees. POST: the caller accepts an invite code."""

    class AcceptInputSerializer(serializers.Serializer):
        # Blank and odd input is accepted here on purpose: the service answers 404 invalid_code for
        # anything that is not a known code, the same answer an attacker gets for a wrong guess.
        code = serializers.CharField(max_length=MAX_INPUT, allow_blank=True, trim_whitespace=False,
                                     help_text="邀请码，或整段粘贴的口令 / 邀请链接（从中取出邀请码）",
                                     error_messages={"required": "请输入邀请码"})

    class AcceptOutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        status = serializers.CharField()
        detail = serializers.CharField()
        depth = serializers.IntegerField(help_text="受邀人在邀请链中的深度（1 = 邀请人是链条起点）")
        inviter = RewardOutput(help_text="邀请人的奖励结果；voucher_code 恒为 null（不向他人展示卡号）")
        invitee = RewardOutput(help_text="调用者（受邀人）的奖励结果与卡号")
        created_at = serializers.DateTimeField()

    class InviteeOutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        invitee = serializers.CharField(help_text="受邀人手机号（脱敏）")
        status = serializers.ChoiceField(choices=Referral.Status.choices)
        status_display = serializers.CharField()
        reward = RewardOutput(help_text="调用者（邀请人）因这次邀请获得的奖励")
        created_at = serializers.DateTimeField()

    @extend_schema(
        parameters=[OpenApiParameter("page", int), OpenApiParameter("page_size", int)],
        responses={
            200: paginated(InviteeOutputSerializer, "PaginatedInviteeList"),
            404: OpenApiResponse(description="not_found：活动不存在"),
        },
        summary="The caller's invitees in a campaign and what each invite earned the caller",
    )
    def get(self, request, slug: str):
        campaign = _campaign(slug)
        paginator = Pagination()
        page = paginator.paginate_queryset(referral_list_for_inviter(user=request.user, campaign=campaign), request,
                                           view=self)
        rows = [
            {
                "id": r.pk,
                "invitee": mask_phone(r.invitee.phone),
                "status": r.status,
                "status_display": r.get_status_display(),
                "reward": _reward(r, "inviter", show_code=True),
                "created_at": r.created_at,
            }
            for r in page
        ]
        return paginator.get_paginated_response(self.InviteeOutputSerializer(rows, many=True).data)

    @extend_schema(
        request=AcceptInputSerializer,
        responses={
            201: AcceptOutputSerializer,
            202: OpenApiResponse(
                inline_serializer("ReferralUnderReview", {
                    "code": serializers.CharField(default="under_review"),
                    "detail": serializers.CharField(),
                    "referral": serializers.IntegerField(),
                }),
                description="under_review：邀请被风控暂缓，审核通过后才发卡",
            ),
            **ERRORS,
        },
        summary="Accept an invite code: both sides get a card (each capped and budgeted), or 202 under_review",
    )
    @idempotent
    def post(self, request, slug: str):
        data = self.AcceptInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        campaign = _campaign(slug)
        referral = referral_accept(
            user=request.user,
            campaign=campaign,
            code=data.validated_data["code"],
            device_id=getattr(request.auth, "device_id", "") or "",
            ip=client_inet(request),
        )
        if referral.status == Referral.Status.UNDER_REVIEW:
            return Response({"code": "under_review", "detail": UNDER_REVIEW_DETAIL, "referral": referral.pk},
                            status=status.HTTP_202_ACCEPTED)
        body = {
            "id": referral.pk,
            "status": referral.status,
            "detail": _accept_detail(referral),
            "depth": referral.depth,
            "inviter": _reward(referral, "inviter", show_code=False),
            "invitee": _reward(referral, "invitee", show_code=True),
            "created_at": referral.created_at,
        }
        return Response(self.AcceptOutputSerializer(body).data, status=status.HTTP_201_CREATED)
