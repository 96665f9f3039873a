from miandan.api.errors import DomainError


class OtpInvalid(DomainError):
    code = "otp_invalid"
    detail = "验证码错误或已过期"
    status = 400


class OtpTooManyAttempts(DomainError):
    code = "rate_limited"
    detail = "验证码错误次数过多，请重新获取"
    status = 429


class OtpTooFrequent(DomainError):
    code = "rate_limited"
    detail = "验证码发送太频繁，请稍后再试"
    status = 429
