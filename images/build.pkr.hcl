# One build, two clouds, ONE set of provisioning scripts (images/scripts/).
#   packer build -only='garo-runner.googlecompute.runner' -var gcp_project_id=P images/
#   packer build -only='garo-runner.amazon-ebs.runner' -var arch=arm64 images/
build {
  name    = "garo-runner"
  sources = ["source.googlecompute.runner", "source.amazon-ebs.runner"]

  provisioner "shell" {
    inline = ["mkdir -p /tmp/garo"]
  }

  provisioner "file" {
    source      = "${path.root}/garo-runner/"
    destination = "/tmp/garo"
  }

  provisioner "shell" {
    execute_command = "chmod +x '{{ .Path }}'; sudo env {{ .Vars }} '{{ .Path }}'"
    environment_vars = [
      "CLOUD=${source.type == "googlecompute" ? "gce" : "aws"}",
      "RUNNER_VERSION=${var.runner_version}",
      "RUNNER_ARCH=${var.arch}",
      "RUNNER_SHA256=${var.runner_sha256[var.arch]}",
      "RUNNER_SUDO=${var.runner_sudo}",
      "LOGGING_AGENT=${var.logging_agent}",
      "RUNNER_HOOKS=${var.runner_hooks}",
      "IMAGE_OS=${var.image_os}",
      "AWS_CLI_VERSION=${var.aws_cli_version}",
    ]
    scripts = [
      "${path.root}/scripts/10-base.sh",
      "${path.root}/scripts/20-docker.sh",
      "${path.root}/scripts/30-runner.sh",
      "${path.root}/scripts/35-hosted-env.sh",
      "${path.root}/scripts/40-logging.sh",
      "${path.root}/scripts/50-garo-runner.sh",
      "${path.root}/scripts/90-cleanup.sh",
    ]
  }
}
