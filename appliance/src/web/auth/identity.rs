//! From an authenticated identity to the role its sessions get: the one
//! place a login decides what the user may do. Local users carry their role
//! in the store; a directory login (LDAP/AD, built on this) maps the user's
//! groups to the highest role any of them is given, or to none (refused).

use crate::store::Role;

/// Who proved who they are, and what is known about them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Identity {
    /// A local user, with the role stored for them.
    Local { username: String, role: Role },
    /// A directory user with the groups the directory lists.
    Directory {
        username: String,
        groups: Vec<String>,
    },
}

/// The role of `identity`, given the directory's group → role mapping;
/// `None`: the identity may not log in. Group names compare without regard
/// to ASCII case, as directories treat them.
pub(crate) fn role_of(identity: &Identity, group_roles: &[(String, Role)]) -> Option<Role> {
    match identity {
        Identity::Local { role, .. } => Some(*role),
        Identity::Directory { groups, .. } => group_roles
            .iter()
            .filter(|(group, _)| groups.iter().any(|g| g.eq_ignore_ascii_case(group)))
            .map(|(_, role)| *role)
            .max(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_users_keep_their_role_and_groups_give_the_highest() {
        let local = Identity::Local {
            username: "ops".into(),
            role: Role::Operator,
        };
        assert_eq!(role_of(&local, &[]), Some(Role::Operator));
        let mapping = [
            ("LB-Operators".to_owned(), Role::Operator),
            ("LB-Admins".to_owned(), Role::Admin),
        ];
        let user = |groups: &[&str]| Identity::Directory {
            username: "alice".into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        };
        assert_eq!(
            role_of(&user(&["lb-operators"]), &mapping),
            Some(Role::Operator)
        );
        assert_eq!(
            role_of(&user(&["LB-Operators", "LB-Admins"]), &mapping),
            Some(Role::Admin)
        );
        assert_eq!(role_of(&user(&["Domain Users"]), &mapping), None);
    }
}
