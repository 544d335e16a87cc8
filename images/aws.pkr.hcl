# AMI built from Canonical's Ubuntu 24.04 LTS AMI.
source "amazon-ebs" "runner" {
  region        = var.aws_region
  instance_type = var.aws_instance_type[var.arch]
  subnet_id     = var.aws_subnet_id
  ssh_username  = "ubuntu"

  source_ami_filter {
    filters = {
      name                = var.aws_source_ami_name[var.arch]
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    owners      = [var.aws_source_ami_owner]
    most_recent = true
  }

  launch_block_device_mappings {
    device_name           = "/dev/sda1"
    volume_size           = 30
    volume_type           = "gp3"
    iops                  = 3000 # gp3 baseline, stated: packer 1.6 rejects an unset throughput
    throughput            = 125
    delete_on_termination = true
  }

  ami_name        = local.image_name
  ami_description = "Garo runner: Ubuntu 24.04, actions/runner ${var.runner_version} (${var.arch})"
  ami_regions     = var.aws_ami_regions
  imds_support    = "v2.0" # plugin-only: instances from this AMI get IMDSv2 only (see validate.sh)
  tags            = merge(local.labels, { garo-runner-version = var.runner_version })
  run_tags        = { garo-image-build = "true" }
}
