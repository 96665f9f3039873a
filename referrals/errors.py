"""Referral refusals; every `code` here is part of the api.md contract."""

from miandan.api.errors import DomainError


class InvalidCode(DomainError):
    code = "invalid_code"
    detail = "邀请码不存在，请检查后重新输入"
    status = 404


class SelfReferral(DomainError):
    code = "self_referral"
    detail = "不能使用自己的邀请码"
    status = 409


class AlreadyReferred(DomainError):
    code = "already_referred"
    detail = "你已经接受过邀请或已邀请过好友，不能再接受邀请"
    status = 409


class ReferralCycle(DomainError):
    code = "referral_cycle"
    detail = "对方是你邀请来的好友，不能反过来接受 TA 的邀请"
    status = 409


class ReferralChainTooLong(DomainError):
    code = "referral_chain_too_long"
    detail = "该邀请链条过长，暂时无法接受邀请"
    status = 409


class ReferralNotPending(DomainError):
    code = "referral_not_pending"
    detail = "该邀请不在待审核状态"
    status = 409


class ReviewForbidden(DomainError):
    code = "forbidden"
    detail = "没有审核邀请的权限"
    status = 403
