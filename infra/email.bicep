// Azure Communication Services Email for the failure digests: an Email Communication Service
// with an Azure-managed domain (<guid>.azurecomm.net, ready without DNS work), linked to a
// Communication Service that accepts Entra tokens only (local/key auth disabled).
// "Service limits for Azure Communication Services", Email: an Azure-managed domain may send 5
// emails a minute and 10 an hour per subscription (custom domains: 30 and 100, raisable by a
// support request). Production needs a custom domain (README, "Failure digests by email").

@description('Tags applied to all three resources.')
param tags object

@description('Name of the Email Communication Service.')
param emailServiceName string

@description('Name of the Communication Service.')
param communicationServiceName string

@description('Where both services keep their data at rest, e.g. "United States", "Europe", "UK". An email domain can only be linked to a Communication Service with the same data location.')
param dataLocation string

resource emailService 'Microsoft.Communication/emailServices@2026-03-18' = {
  name: emailServiceName
  location: 'global'
  tags: tags
  properties: {
    dataLocation: dataLocation
  }
}

// An Azure-managed domain must be named AzureManagedDomain; it comes with the DoNotReply sender.
resource azureManagedDomain 'Microsoft.Communication/emailServices/domains@2026-03-18' = {
  parent: emailService
  name: 'AzureManagedDomain'
  location: 'global'
  tags: tags
  properties: {
    domainManagement: 'AzureManaged'
    userEngagementTracking: 'Disabled'
  }
}

resource communicationService 'Microsoft.Communication/communicationServices@2026-03-18' = {
  name: communicationServiceName
  location: 'global'
  tags: tags
  properties: {
    dataLocation: dataLocation
    linkedDomains: [
      azureManagedDomain.id
    ]
    disableLocalAuth: true
  }
}

output communicationServiceName string = communicationService.name
output endpoint string = 'https://${communicationService.properties.hostName}'
// The visible From address (RFC 5322) is on fromSenderDomain ("P2 sender domain that is displayed
// to the email recipients"); mailFromSenderDomain is the envelope's (RFC 5321, P1) domain
// (DomainProperties in the Microsoft.Communication emailServices/domains reference). They are
// the same for an Azure-managed domain, not necessarily for a custom one.
output senderAddress string = 'DoNotReply@${azureManagedDomain.properties.fromSenderDomain}'
