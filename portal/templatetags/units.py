"""`{% load units %}`: base.units' formatters as template filters, so pages write numbers,
sizes, money and dates exactly as mails and exports do."""

from django import template

from base import units

register = template.Library()

for _name in ("money", "rate", "filesize", "mib", "gib", "mib_of", "day", "moment", "month", "percent"):
    register.filter(_name, getattr(units, _name))
