"""Template filters for staff pages: {{ value|yuan }}, {{ value|yuan_cn }}, {{ value|money }}, {{ td|duration_cn }}."""

from django import template

from miandan import display

register = template.Library()

register.filter("yuan", display.yuan)
register.filter("yuan_cn", display.yuan_cn)
register.filter("signed_yuan", display.signed_yuan)
register.filter("duration_cn", display.duration_cn)


@register.filter
def money(value):
    return display.money_html(value)
