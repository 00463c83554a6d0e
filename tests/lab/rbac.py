"""Authentication by bearer token and a small RBAC evaluator, plus switchable denials.

Real RBAC is a union of allow rules; the lab adds `denials` (checked first) so a test can
take one permission away from any user, including the cluster admin.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

Rule = Dict[str, Any]


@dataclass
class User:
    name: str
    token: str
    groups: List[str] = field(default_factory=list)
    rules: List[Rule] = field(default_factory=list)


@dataclass
class Attributes:
    user: str
    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    @property
    def full_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def _match(values: Optional[List[str]], value: str) -> bool:
    if values is None:
        return True
    return "*" in values or value in values


def rule_matches(rule: Rule, attrs: Attributes) -> bool:
    """A PolicyRule (plus the lab's optional `namespaces` and `users`) against a request."""
    if not _match(rule.get("verbs"), attrs.verb):
        return False
    if not _match(rule.get("apiGroups", ["*"]), attrs.group):
        return False
    resources = rule.get("resources", ["*"])
    if not (
        "*" in resources
        or attrs.full_resource in resources
        or (attrs.subresource and f"{attrs.resource}/*" in resources)
        or (not attrs.subresource and attrs.resource in resources)
        or (attrs.subresource and f"*/{attrs.subresource}" in resources)
    ):
        return False
    names = rule.get("resourceNames")
    if names and attrs.name not in names:
        return False
    namespaces = rule.get("namespaces")
    if namespaces is not None and attrs.namespace not in namespaces:
        return False
    users = rule.get("users")
    return users is None or attrs.user in users


def forbidden_message(attrs: Attributes) -> str:
    """The wording of the RBAC authorizer's 403, byte for byte."""
    who = f'User "{attrs.user}" cannot {attrs.verb} resource "{attrs.full_resource}" ' \
          f'in API group "{attrs.group}"'
    where = f' in the namespace "{attrs.namespace}"' if attrs.namespace else " at the cluster scope"
    qual = f"{attrs.resource}.{attrs.group}" if attrs.group else attrs.resource
    subject = f'{qual} "{attrs.name}"' if attrs.name else qual
    return f"{subject} is forbidden: {who}{where}"


class Authorizer:
    def __init__(self, users: List[User]) -> None:
        self.lock = threading.Lock()
        self.users: Dict[str, User] = {u.name: u for u in users}
        self.denials: List[Rule] = []

    def user_for_token(self, token: str) -> Optional[User]:
        with self.lock:
            for u in self.users.values():
                if u.token == token:
                    return u
        return None

    def set_rules(self, user: str, rules: List[Rule]) -> None:
        with self.lock:
            self.users[user].rules = list(rules)

    def deny(self, rule: Rule) -> None:
        with self.lock:
            self.denials.append(dict(rule))

    def clear_denials(self) -> None:
        with self.lock:
            self.denials.clear()

    def authorize(self, attrs: Attributes) -> tuple[bool, str]:
        """(allowed, reason) like the RBAC authorizer answers a SubjectAccessReview."""
        with self.lock:
            for d in self.denials:
                if rule_matches(d, attrs):
                    return False, "denied by the lab (switchable denial)"
            user = self.users.get(attrs.user)
            if user is None:
                return False, ""
            if attrs.group == "authorization.k8s.io" and attrs.verb == "create" and \
                    attrs.resource in ("selfsubjectaccessreviews", "selfsubjectrulesreviews"):
                # every authenticated user has these (ClusterRole system:basic-user)
                return True, 'RBAC: allowed by ClusterRoleBinding "system:basic-user" of ' \
                             'ClusterRole "system:basic-user" to Group "system:authenticated"'

            if "system:masters" in user.groups:
                return True, ""
            for i, rule in enumerate(user.rules):
                if rule_matches(rule, attrs):
                    return True, (
                        f'RBAC: allowed by ClusterRoleBinding "lab-{user.name}" of ClusterRole '
                        f'"lab-{user.name}" to User "{user.name}" (rule {i})'
                    )
            return False, ""
