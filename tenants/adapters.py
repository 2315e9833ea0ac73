from allauth.account.adapter import DefaultAccountAdapter

from tenants.services import personal_tenant_for


class AccountAdapter(DefaultAccountAdapter):
    def save_user(self, request, user, form, commit=True):
        user = super().save_user(request, user, form, commit=commit)
        if commit:
            personal_tenant_for(user)
        return user


def user_display(user) -> str:
    """How allauth names a user in pages and e-mails: the e-mail, never the generated username."""
    return user.email
