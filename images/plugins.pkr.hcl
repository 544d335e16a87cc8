# Plugin pins for modern Packer (>= 1.7): `packer init images/` installs them.
# Kept in its own file because Debian's packer 1.6, used by images/validate.sh
# in CI, does not understand `required_plugins` (it has both builders built in).
packer {
  required_version = ">= 1.10.0"
  required_plugins {
    googlecompute = {
      source  = "github.com/hashicorp/googlecompute"
      version = "~> 1.1"
    }
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = "~> 1.3"
    }
  }
}
