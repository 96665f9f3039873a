"""Issue a bearer token to a staff user, for scripted report downloads (finance tooling, cron).

    python manage.py staff_token finance            # prints the token once; store it like a password

Staff log in to admin with a password and have no phone, so the app's OTP login cannot give them
a token. Revoke it in admin (登录令牌 -> 吊销).
"""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts.services import token_create


class Command(BaseCommand):
    help = "为员工账号签发 API 令牌（用于脚本下载财务报表），只显示一次"

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--device-id", default="staff-cli", help="记录在令牌上的来源说明")

    def handle(self, *args, username: str, device_id: str, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"没有用户名为 {username} 的账号")
        if not (user.is_active and user.is_staff):
            raise CommandError(f"{username} 不是在职员工账号，不签发员工令牌")
        token = token_create(user=user, device_id=device_id[:128])
        if not user.has_perm("campaign.view_budget_report"):
            self.stderr.write(f"注意：{username} 没有查看预算报表的权限，报表接口对其返回 404")
        self.stdout.write(token)
